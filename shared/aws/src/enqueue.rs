//! The claim-and-send ports over AWS, which the ingest function and the sweeper share: the
//! task record (Query, PutItem through [`TaskTable`]), the download queue
//! (SendMessageBatch), the task item's `queued` set and the claimed-file releases
//! (UpdateItem), on the system clock.

use std::collections::HashMap;
use std::ops::Range;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;
use stemvault_vault::enqueue::{EnqueueFiles, MarkQueued, ReleaseClaims};
use stemvault_vault::items::{TASK_SK, file_sk};
use stemvault_vault::{Clock, FileJob, LeaseEnd, LoadTask, QueueError, SaveTask, StoreError, TaskRecord};
use suno_callbacks::TaskId;

use crate::TaskTable;
use crate::sdk_error::sdk_error_text;
use crate::table::{Releasing, Update, n, release_update};

/// SendMessageBatch takes at most 10 entries.
const SQS_BATCH: usize = 10;

/// The most the bodies of one SendMessageBatch may sum to, and one body may be: 256 KiB, SQS's
/// limit until 2025 (it takes 1 MiB since, as moto does; kept at the old one so a queue whose
/// `MaximumMessageSize` was left at that default takes every batch). A job is a few hundred
/// bytes; a batch over the limit is refused whole, so an outsized one (a URL of many
/// kilobytes) would take the other files of its batch down with it, on every try; a job that
/// alone is over it is sent without its URL ([`job_body`]).
const SQS_BATCH_BYTES: usize = 256 * 1024;

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
        self.table.load(task_id.as_str()).await
    }
}

impl SaveTask for TableAndQueue {
    async fn save_task(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        self.table.save(before, after).await
    }
}

impl EnqueueFiles for TableAndQueue {
    /// The batches at once (up to [`crate::MAX_REQUESTS_AT_ONCE`]), in order: a 12-file task's
    /// two cost one round trip, not two.
    async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, QueueError>> {
        let bodies: Vec<Result<String, QueueError>> = jobs.iter().map(job_body).collect();
        let sizes: Vec<usize> = bodies.iter().map(|body| body.as_ref().map_or(0, String::len)).collect();
        let mut bodies = bodies.into_iter();
        let sends =
            batches(&sizes).into_iter().map(|batch| self.send_batch(bodies.by_ref().take(batch.len()).collect()));
        let sent: Vec<_> = futures::stream::iter(sends).buffered(crate::MAX_REQUESTS_AT_ONCE).collect().await;
        sent.into_iter().flatten().collect()
    }
}

/// A job's message body. The download copies the URL the file's item holds (a message's URL
/// only tells it whether the record has a newer one), so a job too large for a message (a
/// URL of hundreds of kilobytes, which the download refuses and records as failed) is sent
/// without its URL rather than refused by the queue on every try.
fn job_body(job: &FileJob) -> Result<String, QueueError> {
    let body = message_json(job)?;
    if body.len() <= SQS_BATCH_BYTES {
        return Ok(body);
    }
    message_json(&FileJob { url: String::new(), ..job.clone() })
}

/// `job` as JSON that SQS keeps as sent ([`crate::sqs_text`]: a URL may hold U+FFFE or U+FFFF).
fn message_json(job: &FileJob) -> Result<String, QueueError> {
    serde_json::to_string(job).map(crate::sqs_text::xml_characters_only).map_err(|e| refused(e.to_string()))
}

/// A message no attempt can send (it cannot be made, or SQS says it is at fault).
fn refused(message: String) -> QueueError {
    QueueError { operation: SEND, message, sender_fault: true }
}

const SEND: &str = "SendMessageBatch";

/// `sizes` (the bodies' bytes, in order) cut into consecutive batches of at most
/// [`SQS_BATCH`] entries summing to at most [`SQS_BATCH_BYTES`]; a body over the limit alone
/// is a batch of its own (refused alone).
fn batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == SQS_BATCH || bytes + size > SQS_BATCH_BYTES) {
            batches.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

impl TableAndQueue {
    /// One SendMessageBatch of the bodies of consecutive jobs; entry ids are positions in
    /// `bodies`.
    async fn send_batch(&self, bodies: Vec<Result<String, QueueError>>) -> Vec<Result<String, QueueError>> {
        let count = bodies.len();
        let entries: Result<Vec<SendMessageBatchRequestEntry>, QueueError> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body?)
                    .build()
                    .map_err(|e| refused(e.to_string()))
            })
            .collect();
        let sent = match entries {
            Ok(entries) => {
                self.sqs.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await
            }
            Err(e) => return vec![Err(e); count],
        };
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                let failed = QueueError::transient(SEND, sdk_error_text(&e));
                return vec![Err(failed); count];
            }
        };
        let mut by_id: HashMap<&str, Result<String, QueueError>> = HashMap::new();
        for ok in out.successful() {
            by_id.insert(ok.id(), Ok(ok.message_id().to_owned()));
        }
        for failed in out.failed() {
            let message = format!("{}: {}", failed.code(), failed.message().unwrap_or("no message"));
            by_id
                .insert(failed.id(), Err(QueueError { operation: SEND, message, sender_fault: failed.sender_fault() }));
        }
        (0..count)
            .map(|i| {
                let missing = || Err(QueueError::transient(SEND, "not in the batch answer"));
                by_id.remove(i.to_string().as_str()).unwrap_or_else(missing)
            })
            .collect()
    }
}

impl MarkQueued for TableAndQueue {
    async fn mark_queued(&self, task_id: &TaskId, names: &[String]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        self.table.update("queued", task_id.as_str(), TASK_SK, queued_update(names)).await.map(drop)
    }
}

impl ReleaseClaims for TableAndQueue {
    async fn release_claims(&self, task_id: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
        // Rare (the queue refused a send): one UpdateItem per file; a file no longer held is
        // someone else's now.
        for name in names {
            let update = release_update(claimant, LeaseEnd::at(self.now()), Releasing::Committed);
            self.table.update("release", task_id.as_str(), &file_sk(name), update).await?;
        }
        Ok(())
    }
}

crate::system_clock!(TableAndQueue);

/// Add `names` to the task item's `queued` set; a new version, so a concurrent save of the
/// task item (which writes the set it read) conflicts instead of dropping them.
fn queued_update(names: &[String]) -> Update {
    let mut u = Update::new("ADD #queued :names, #version :one", "attribute_exists(sk)");
    u.name("#queued", "queued").name("#version", "version");
    u.value(":names", AttributeValue::Ss(names.to_vec())).value(":one", n(1));
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch SQS answers in part: each job has its own result, the refused one with SQS's
    /// code and whether the sender is at fault, one missing from the answer as not sent.
    #[tokio::test]
    async fn each_job_of_a_batch_answered_in_part_has_its_own_result() {
        let answer = br#"{"Successful":[{"Id":"0","MessageId":"m-0","MD5OfMessageBody":"x"}],
            "Failed":[{"Id":"1","SenderFault":true,"Code":"InvalidParameterValue","Message":"bad body"}]}"#;
        let (origin, served) = crate::test_http::answer_once(crate::test_http::json_reply(200, answer)).await;
        let queue = TableAndQueue::new(
            &crate::test_http::sdk_at(&origin),
            "table",
            &format!("{origin}/000000000000/downloads"),
        );
        let job = |name: &str| FileJob {
            task_id: "t1".into(),
            name: name.into(),
            url: format!("https://cdn1.suno.ai/{name}.mp3"),
            key: format!("tasks/t1/{name}.mp3"),
        };
        let results = queue.enqueue_files(&[job("a"), job("b"), job("c")]).await;
        assert_eq!(
            results,
            [
                Ok("m-0".to_owned()),
                Err(QueueError {
                    operation: SEND,
                    message: "InvalidParameterValue: bad body".into(),
                    sender_fault: true
                }),
                Err(QueueError::transient(SEND, "not in the batch answer")),
            ]
        );
        let request = served.await.expect("one request");
        assert!(request.contains("\"Id\":\"2\""), "three entries sent: {request}");
    }

    #[test]
    fn sent_files_join_the_task_item_s_queued_set_in_one_new_version() {
        let u = queued_update(&["tracks/a/audio".to_owned(), "vocal".to_owned()]);
        assert_eq!(
            (u.update.as_str(), u.condition.as_str()),
            ("ADD #queued :names, #version :one", "attribute_exists(sk)")
        );
        assert_eq!(u.values[":names"], AttributeValue::Ss(vec!["tracks/a/audio".into(), "vocal".into()]));
        assert_eq!(u.names["#queued"], "queued");
        u.assert_well_formed();
    }

    #[test]
    fn jobs_go_in_batches_of_ten_within_the_batch_byte_limit() {
        assert_eq!(batches(&[]), Vec::<Range<usize>>::new());
        assert_eq!(batches(&[300; 12]), [0..10, 10..12], "a 12-file task: two batches");
        assert_eq!(batches(&[300; 20]), [0..10, 10..20]);
        // Bytes cut a batch short: 100 KiB bodies, two a batch plus what fits.
        let kib = 1024;
        assert_eq!(batches(&[100 * kib, 100 * kib, 100 * kib, 300]), [0..2, 2..4]);
        assert_eq!(batches(&[SQS_BATCH_BYTES - 10, 10, 1]), [0..2, 2..3], "exactly at the limit fits");
        // An outsized body is a batch of its own: the others are not refused with it.
        assert_eq!(batches(&[300, SQS_BATCH_BYTES + 1, 300, 300]), [0..1, 1..2, 2..4]);
    }

    #[test]
    fn a_job_too_large_for_a_message_is_sent_without_its_url() {
        let job =
            |url: String| FileJob { task_id: "t1".into(), name: "vocal".into(), url, key: "tasks/t1/vocal.mp3".into() };
        let small = job("https://cdn.example/a.mp3".into());
        assert_eq!(job_body(&small), Ok(serde_json::to_string(&small).unwrap()), "as it is");
        let huge = job(format!("https://cdn.example/a.mp3?{}", "q".repeat(SQS_BATCH_BYTES)));
        let body = job_body(&huge).unwrap();
        assert!(body.len() <= SQS_BATCH_BYTES, "{} bytes", body.len());
        let sent: FileJob = serde_json::from_str(&body).unwrap();
        assert_eq!(sent, FileJob { url: String::new(), ..huge });
    }

    /// SQS refuses U+FFFE and U+FFFF in a message: a URL or name holding them is escaped, and
    /// reads back the same.
    #[test]
    fn characters_the_queue_refuses_are_escaped() {
        let job = FileJob {
            task_id: "t1".into(),
            name: "vocal\u{fffe}".into(),
            url: "https://cdn.example/a\u{ffff}b\u{fffd}.mp3".into(),
            key: "tasks/t1/vocal.mp3".into(),
        };
        let body = job_body(&job).unwrap();
        assert!(!body.contains(['\u{fffe}', '\u{ffff}']), "{body:?}");
        assert!(body.contains("a\\uffffb\u{fffd}.mp3"), "U+FFFD is allowed as it is: {body:?}");
        assert_eq!(serde_json::from_str::<FileJob>(&body).unwrap(), job);
    }
}
