//! The claim-and-send ports over AWS, which the ingest function and the sweeper share: the
//! task record (GetItem, PutItem through [`TaskTable`]), the download queue
//! (SendMessageBatch) and the claimed-file updates (UpdateItem), on the system clock.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use stemvault_vault::enqueue::{EnqueueFiles, MarkQueued, ReleaseClaims, SentJob};
use stemvault_vault::{Clock, Conditional, FileJob, FileStatus, LoadTask, SaveTask, StoreError, TaskRecord, Timestamp};
use suno_callbacks::TaskId;

use crate::TaskTable;
use crate::table::{Update, n, s};

/// SendMessageBatch takes at most 10 entries.
const SQS_BATCH: usize = 10;
/// Files changed by one UpdateItem: keeps its expressions far below DynamoDB's 4 KB limit.
const FILES_PER_UPDATE: usize = 10;

/// The task table and the download queue: what claiming and sending files needs. A
/// function's `AwsPorts` holds one and hands it the shared ports
/// (`stemvault_vault::delegate_enqueue_ports!`).
#[derive(Debug, Clone)]
pub struct TableAndQueue {
    table: TaskTable,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl TableAndQueue {
    /// Build the clients once, at start-up.
    pub fn new(sdk: &aws_config::SdkConfig, table_name: &str, queue_url: &str) -> TableAndQueue {
        TableAndQueue {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), table_name),
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: queue_url.to_owned(),
        }
    }

    /// The task table, for a function's own calls on it.
    pub fn table(&self) -> &TaskTable {
        &self.table
    }
}

impl LoadTask for TableAndQueue {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.table.get(task_id.as_str()).await
    }
}

impl SaveTask for TableAndQueue {
    async fn save_task(&self, record: &TaskRecord, expected_version: Option<u64>) -> Result<(), StoreError> {
        self.table.put(record, expected_version).await
    }
}

impl EnqueueFiles for TableAndQueue {
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, String>> {
        let mut results = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(SQS_BATCH) {
            results.extend(self.send_batch(chunk).await);
        }
        results
    }
}

impl TableAndQueue {
    /// One SendMessageBatch; entry ids are positions in `jobs`.
    async fn send_batch(&self, jobs: &[FileJob]) -> Vec<Result<String, String>> {
        let entries: Result<Vec<SendMessageBatchRequestEntry>, String> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let body = serde_json::to_string(job).map_err(|e| e.to_string())?;
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect();
        let sent = match entries {
            Ok(entries) => {
                self.sqs.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await
            }
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                let reason = DisplayErrorContext(e).to_string();
                return jobs.iter().map(|_| Err(reason.clone())).collect();
            }
        };
        let mut by_id: HashMap<&str, Result<String, String>> = HashMap::new();
        for ok in out.successful() {
            by_id.insert(ok.id(), Ok(ok.message_id().to_owned()));
        }
        for failed in out.failed() {
            let reason = format!("{}: {}", failed.code(), failed.message().unwrap_or("no message"));
            by_id.insert(failed.id(), Err(reason));
        }
        (0..jobs.len())
            .map(|i| by_id.remove(i.to_string().as_str()).unwrap_or_else(|| Err("not in the batch answer".into())))
            .collect()
    }
}

impl MarkQueued for TableAndQueue {
    async fn mark_queued(
        &self,
        task_id: &TaskId,
        claimant: &str,
        sent: &[SentJob],
        queued_at: Timestamp,
    ) -> Result<(), StoreError> {
        let changes: Vec<FileChange> = sent
            .iter()
            .map(|s| FileChange::Queued { name: &s.name, message_id: &s.message_id, queued_at: queued_at.rfc3339() })
            .collect();
        self.update_claimed(task_id, claimant, &changes).await
    }
}

impl ReleaseClaims for TableAndQueue {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        let changes: Vec<FileChange> = names.iter().map(|name| FileChange::Released { name }).collect();
        self.update_claimed(task_id, claimant, &changes).await
    }
}

impl Clock for TableAndQueue {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration).await
    }
}

/// What happens to one file this request holds the claim on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileChange<'a> {
    Queued { name: &'a str, message_id: &'a str, queued_at: String },
    Released { name: &'a str },
}

impl FileChange<'_> {
    fn name(&self) -> &str {
        match self {
            FileChange::Queued { name, .. } | FileChange::Released { name } => name,
        }
    }
}

/// One UpdateItem over several files, each conditional on still being `enqueuing` under
/// the claimant's claim.
fn claimed_update(claimant: &str, changes: &[FileChange]) -> Update {
    let mut set = vec!["#version = #version + :one".to_owned()];
    let mut remove = Vec::new();
    let mut condition = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let file = format!("#files.#f{i}");
        condition.push(format!("{file}.#status = :enqueuing AND {file}.#claim = :me"));
        remove.push(format!("{file}.#claim, {file}.#lease"));
        match change {
            FileChange::Queued { .. } => {
                set.push(format!("{file}.#status = :queued, {file}.#queued_at = :at{i}, {file}.#message_id = :m{i}"))
            }
            FileChange::Released { .. } => set.push(format!("{file}.#status = :pending")),
        }
    }
    let mut u = Update::new(format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")), condition.join(" AND "));
    u.name("#files", "files").name("#version", "version").name("#status", "status").name("#claim", "claim");
    u.name("#lease", "lease_until").name("#queued_at", "queued_at").name("#message_id", "message_id");
    u.value(":one", n(1)).value(":me", s(claimant));
    u.value(":enqueuing", s(FileStatus::Enqueuing.as_str()))
        .value(":queued", s(FileStatus::Queued.as_str()))
        .value(":pending", s(FileStatus::Pending.as_str()));
    for (i, change) in changes.iter().enumerate() {
        u.name(&format!("#f{i}"), change.name());
        if let FileChange::Queued { message_id, queued_at, .. } = change {
            u.value(&format!(":at{i}"), s(queued_at)).value(&format!(":m{i}"), s(message_id));
        }
    }
    // Placeholders only the chosen changes use must not be sent (DynamoDB refuses unused ones).
    u.without_unused_placeholders()
}

/// Why one claimed update did not apply.
enum UpdateFailure {
    /// Some file is no longer `enqueuing` under this claim (taken over, or a downloader
    /// already has it): nothing to do for it.
    NotHeld,
    Store(StoreError),
}

impl TableAndQueue {
    /// Apply the changes, [`FILES_PER_UPDATE`] files per UpdateItem; when a group's condition
    /// fails, file by file, so one file that is no longer held does not stop the others.
    async fn update_claimed(
        &self,
        task_id: &TaskId,
        claimant: &str,
        changes: &[FileChange<'_>],
    ) -> Result<(), StoreError> {
        for group in changes.chunks(FILES_PER_UPDATE) {
            match self.update_once(task_id, claimant, group).await {
                Ok(()) => {}
                Err(UpdateFailure::NotHeld) if group.len() > 1 => {
                    for single in group.chunks(1) {
                        match self.update_once(task_id, claimant, single).await {
                            Ok(()) | Err(UpdateFailure::NotHeld) => {}
                            Err(UpdateFailure::Store(e)) => return Err(e),
                        }
                    }
                }
                Err(UpdateFailure::NotHeld) => {}
                Err(UpdateFailure::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn update_once(
        &self,
        task_id: &TaskId,
        claimant: &str,
        changes: &[FileChange<'_>],
    ) -> Result<(), UpdateFailure> {
        match self.table.update("claimed", task_id.as_str(), claimed_update(claimant, changes)).await {
            Ok(Conditional::Applied) => Ok(()),
            Ok(Conditional::Conflict) => Err(UpdateFailure::NotHeld),
            Err(e) => Err(UpdateFailure::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_update_names_each_file_and_conditions_on_the_claim() {
        let changes = [
            FileChange::Queued { name: "tracks/a/audio", message_id: "m-1", queued_at: "T".into() },
            FileChange::Queued { name: "vocal", message_id: "m-2", queued_at: "T".into() },
        ];
        let u = claimed_update("req-9", &changes);
        assert_eq!(
            u.update,
            "SET #version = #version + :one, \
             #files.#f0.#status = :queued, #files.#f0.#queued_at = :at0, #files.#f0.#message_id = :m0, \
             #files.#f1.#status = :queued, #files.#f1.#queued_at = :at1, #files.#f1.#message_id = :m1 \
             REMOVE #files.#f0.#claim, #files.#f0.#lease, #files.#f1.#claim, #files.#f1.#lease"
        );
        assert_eq!(
            u.condition,
            "#files.#f0.#status = :enqueuing AND #files.#f0.#claim = :me AND \
             #files.#f1.#status = :enqueuing AND #files.#f1.#claim = :me"
        );
        assert_eq!(u.names["#f0"], "tracks/a/audio");
        assert_eq!(u.names["#lease"], "lease_until");
        assert_eq!(u.values[":me"], s("req-9"));
        assert_eq!(u.values[":m1"], s("m-2"));
        assert_eq!(u.values[":queued"], s("queued"));
        assert!(!u.values.contains_key(":pending"));
    }

    #[test]
    fn a_release_puts_files_back_to_pending_and_sends_no_unused_placeholder() {
        let u = claimed_update("req-9", &[FileChange::Released { name: "vocal" }]);
        assert_eq!(
            u.update,
            "SET #version = #version + :one, #files.#f0.#status = :pending REMOVE #files.#f0.#claim, #files.#f0.#lease"
        );
        assert_eq!(u.values[":pending"], s("pending"));
        assert!(!u.names.contains_key("#queued_at") && !u.names.contains_key("#message_id"));
        for placeholder in u.values.keys() {
            assert!(
                u.update.contains(placeholder.as_str()) || u.condition.contains(placeholder.as_str()),
                "{placeholder}"
            );
        }
    }
}
